"""The benchmark harness that runs inside the lab VM: ipvsd against ldirectord and keepalived, same lab, same run."""
