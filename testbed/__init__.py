import os as _os

if _os.environ.get("TESTBED_ORIGINS_DIR"):  # a test asks where this process imports from
    from .startup import report_origins as _report

    _report()
