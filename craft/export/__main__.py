"""``python -m craft.export``: the 0.1 spelling of ``python -m craft export``, for one release."""

from craft.errors import old_entry_point
from craft.export import main

old_entry_point("craft.export", "export")
main()
