"""The test bed: what tests, benchmarks and the demo run the system on.

    netns        network namespaces through ``ip``: make, enter, empty, delete
    host         Host (a namespace + private mount namespace), its processes, veth cables
    worker       Python code inside a host, called from outside (``python -m testbed.worker``)
    lab          Lab: a wan, public hosts, NAT routers, private hosts; ``standalone()`` hosts;
                 ``python -m testbed.lab up|list|shell|teardown``
    mesh         ``controltower serve`` and ``aircrew`` processes in a lab
    redisserver  a real redis-server on a free loopback port
    tower        a real ``controltower serve`` on loopback
    simagent     simulated nodes: the real ``aircrew.agent.Agent`` with a recording device
    sharing      what thousands of simulated agents in one process share (``bench``)
    standin      a stand-in tower session (snapshot, updates, requests) without Redis
    errors       LabError, CommandError, MeshFailure (in the ``wire.errors`` hierarchy)

It may import every package of the project; nothing of the project imports it but
``tests``, ``bench`` and ``deploy/demo.py``.
"""
