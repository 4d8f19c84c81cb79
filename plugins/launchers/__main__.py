import sys

from plugins.launchers.launch import main

sys.exit(main())
