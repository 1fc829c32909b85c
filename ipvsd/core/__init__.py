"""The pure core: health, probe vocabulary, desired table, plan and the decide step; no I/O, time passed in."""
