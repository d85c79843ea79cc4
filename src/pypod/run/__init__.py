"""A run, from the laptop: the modules import one way only, top to bottom.

- session:  the orchestrator of `pypod [CODE]` and `pypod run` (plan, image, Job, wait, streams)
- manage:   `pypod ps`, `logs`, `attach`, `rm`
- livesync: the live sync beside a REPL, and `pypod sync RUN`
- driver:   one run's Job and pod on the cluster (create, wait, logs, REPL relay, forwards)
- terminal, history, forward, output: the streams and what the user sees
"""
