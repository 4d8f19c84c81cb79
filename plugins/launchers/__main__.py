from filelib import run_main
from plugins.launchers.launch import main

run_main(main)
