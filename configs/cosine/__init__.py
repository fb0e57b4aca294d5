"""The cosine schedule, x(t) = cos(pi t / 2) x(0) + sin(pi t / 2) eps (sde_lib.CosineSDE), trained by flow
matching."""
