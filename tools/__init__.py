"""The pipeline's stages, one package each, in the order data flows (see README, "Where the code lives"):

    core -> models, data, train, eval, judge, export, report; bench and demo on top.

Imports run one way: command lines -> stage packages -> core (and `plugins/`); a stage uses another
only through that package's public face (its `__init__`)."""
