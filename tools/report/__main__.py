from filelib import run_main
from tools.report.build import main

run_main(main)
