"""``python -m craft.compare``: the 0.1 spelling of ``python -m craft compare``, for one release."""

from craft.compare import main
from craft.errors import old_entry_point

old_entry_point("craft.compare", "compare")
main()
