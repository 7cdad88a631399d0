"""Function triggers: the only modules that import ``azure.functions``.

Each decodes its input, calls plain Python in ``shared/``, and returns.
"""
