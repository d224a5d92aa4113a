"""The one-machine stack of `worldenv up` (and of `worldenv experiment`): an embedded Redis, the
model services, the debug API and rollout workers as supervised child processes (`stack`), the
health probes (`probes`). Where it records itself is `worldenv.home`."""
