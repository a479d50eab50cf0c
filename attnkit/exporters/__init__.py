"""Exporters: one module per artifact format, plus the manifest."""
