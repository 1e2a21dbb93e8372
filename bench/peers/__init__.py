"""fastreplay against other replay buffers: ``python -m bench.peers.run`` drives one worker process (``worker.py``) per
library, row set and mode; each ``lib_*.py`` adapts one library; ``report.py`` writes the tables and plots."""
