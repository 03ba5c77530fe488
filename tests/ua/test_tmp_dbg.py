import trio
from lab import attack
from .conftest import ROUTER, DOMAIN, Lab

async def test_dbg(lab: Lab) -> None:
    import time
    t = time.time()
    run = await attack._run("sipvicious_svwar", [*attack._common(ROUTER, "127.0.0.97", None), "-e", "1000-1002,5000", "-m", "REGISTER", "--domain", DOMAIN, "--maximumtime", "3", "--force", "-v", "--debug", ROUTER[0]], 20)
    print(time.time() - t, run.returncode, run.stdout, run.stderr[-3000:])
