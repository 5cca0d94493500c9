"""The `mamaroom` command and the operator tools behind it (demo, history,
rollout, provisioning, backup, broker accounts): the shell on top of the
parts. Nothing below imports it."""
