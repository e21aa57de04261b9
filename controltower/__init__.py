"""ControlTower: the control plane service (REST API, request worker, STUN)."""
