"""`python worker.py` runs the worker: the same entry as `fullstory-jobs` (cli.py), whose default command is
`worker`; any other command works here too (`python worker.py demo` is `fullstory-jobs demo`).

What the worker runs (the registry's workflows and activities on their task queues) is built in wiring.py.
"""

from cli import entry

if __name__ == "__main__":
    entry()
