import sys

from tools.export.export import main

sys.exit(main())
