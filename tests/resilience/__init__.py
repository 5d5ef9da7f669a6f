"""The resilience suite: each test injects one kind of fault (a killed task, a dependency outage, a
race, a hostile site, a long run) and checks that nothing is lost or duplicated.

Run it alone with `make test-resilience`; `make test` (and CI) runs it with the rest.
"""
