"""The package version, in a module of its own so that the manifest can record it without importing
the package face (``attnkit/__init__.py`` imports the whole public API lazily, from above)."""

__version__ = "0.1.0"
