from filelib import run_main
from tools.judge.cli import main

run_main(main)
