from filelib import run_main
from tools.refine.refine import main

run_main(main)
