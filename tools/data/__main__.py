from filelib import run_main
from tools.data.cli import main

run_main(main)
