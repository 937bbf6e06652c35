"""Developer tools, not part of the server (nor of its wheel): tools/check_docs_offline.py
(`make docs-offline`), with the browser driver tools/cdp.py and the page checks
tools/docs_checks.py."""
