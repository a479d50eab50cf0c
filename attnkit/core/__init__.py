"""The foundation (layer 1): errors, names, specs, the machine and its targets, comparison, timing-free helpers.

Imports nothing above itself and nothing heavy at import time (numpy at most); every other layer may import it.
"""
