"""Analysis: metric providers behind one Protocol, and the checks that judge a canary."""
