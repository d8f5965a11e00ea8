"""The misconfiguration lab: a catalogue of real failures, run against a running lab.

- ``catalogue.toml`` the scenarios as data (what is wrong, which side, set-up, expectations, hint)
- ``catalogue``      loads and checks it
- ``probe``          the modality side: one real send/echo, reduced to what was observed
- ``adminapi``       the admin API client (set-up, restore, the PACS events)
- ``netns``          network namespaces with veth pairs and real packet drops
- ``registryctl``    pausing the registry (Redis) for the registry-down scenario
- ``runner``         set up, run, restore, observe, compare
- ``report``         the rich table and JUnit XML
- ``cli``            ``ct-simulator scenarios list | run``
"""
