"""Temporal workflows. They import only domain/ and activity names, never store/ or comfy/.

This file imports nothing on purpose: the workflow sandbox imports a workflow's module afresh
for every run, and with it this package's `__init__`. When it imported every workflow module,
each make job re-imported (and, without bytecode, recompiled) the cook, media and training
workflows too (issue 17: 36 % of the worker's time). The list a worker registers is
`workflows.registry.ALL_WORKFLOWS`, imported by the host only.
"""
