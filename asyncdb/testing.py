"""pytest plugin for applications that use asyncdb (registered as ``asyncdb``).

Fixtures arrive with the testing issue; this module is the entry point's target.
"""

from __future__ import annotations
