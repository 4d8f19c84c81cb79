import sys

from tools.report.build import main

sys.exit(main())
