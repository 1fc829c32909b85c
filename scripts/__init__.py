"""Developer scripts (lab, benchmarks, demo); not part of the ipvsd package."""
