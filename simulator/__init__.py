"""A Fullstory API simulator on a real loopback socket, with per-test knobs.

    with Simulator(api_key="test-key") as sim:           # requests carry `Authorization: Basic test-key`
        job = sim.add_batch_job(kind="events", duration=60, imports=10, errors=3, page_size=2)
        sim.fault(r"/errors$", kind="status", status=429, retry_after="30")
        ... point the client at sim.base_url ...
        assert sim.count("GET", "/v2/{kind}/batch/{job_id}/errors") == 3

Batch imports (events, users), operations and segment exports with signed download URLs, and the
legacy Data Export (list, get, 2 downloads a minute). All timing reads `sim.clock` (settable).
`python -m simulator` runs it alone; `/_sim/...` drives it from another process.
"""

from .server import Simulator
from .state import RequestRecord

__all__ = ["RequestRecord", "Simulator"]
