"""Orchestration (layer 7): the flows users run, composed from the services below: export with its check
(:mod:`.export`), a model or export directory resolved for the services (:mod:`.resolve`), ``run``'s whole flow
and report (:mod:`.run`), and serving layouts (:mod:`.package`)."""
