from filelib import run_main
from tools.export.export import main

run_main(main)
