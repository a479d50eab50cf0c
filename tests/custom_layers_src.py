"""A custom layer used by the tests as a user's module (`--import`)."""

import keras


@keras.saving.register_keras_serializable(package="usermodels")
class ScaledSum(keras.layers.Layer):
    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, a, b):
        return self.scale * a + b

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
