"""The composition root and what only it may do: build every client from the settings
(``runtime``), check the configuration, answer health, and handle one queue delivery.

The triggers and the command line call in here; nothing below imports it.
"""
