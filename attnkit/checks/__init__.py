"""Checks of artifacts and of the machine (services, layer 6): agreement with the eager fp32 model
(:mod:`.agreement`), the first diverging layer (:mod:`.locate`), attention maps, and what this machine can run
(:mod:`.env`)."""
