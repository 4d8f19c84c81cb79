"""The LLaMA-Factory side of the project, by kind; each kind is a subpackage with a small face.

- `pools`: reading instruction pools of every shape (Alpaca, ShareGPT, OpenAI, prompt-only) and the
  shipped demo pool;
- `selection`: choosing rows (strategies, IFD, diversity, quota, knee, curriculum, leakage, mix);
- `publishing`: writing a data set as one unit and registering it in `dataset_info.json`;
- `launchers`: what LLaMA-Factory lacks at training time (adapter types it has no key for, pruned
  models it cannot load from a folder), started as one launcher with one override parser.

Imports run pools <- selection <- publishing; launchers stand apart. Nothing here imports `tools`.
"""

__version__ = "0.1.0"
