import sys

from tools.refine.refine import main

sys.exit(main())
