"""Stage 1, the export: status messages from the site database → remediation requests on
the queue, with per-site progress (the watermark) and the site lease.
"""
