"""An alias: the demo runs on the offline world and lives in `distillery.world.demo`.

`from distillery.demo import DemoSettings, run_demo` keeps working; its submodules are only
`distillery.world.demo.<module>`.
"""

from distillery.world.demo import *  # noqa: F401,F403
from distillery.world.demo import __all__  # noqa: F401
