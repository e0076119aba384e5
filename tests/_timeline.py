import os, time
def pytest_runtest_protocol(item, nextitem):
    item._t0 = time.time()
def pytest_runtest_logfinish(nodeid, location):
    pass
_start = {}
def pytest_runtest_logstart(nodeid, location):
    _start[nodeid] = time.time()
def pytest_runtest_logreport(report):
    if report.when == "teardown":
        with open("/tmp/timeline.log", "a") as f:
            f.write(f"{os.environ.get('PYTEST_XDIST_WORKER','m')} {_start.get(report.nodeid,0):.2f} {time.time():.2f} {report.nodeid}\n")
