"""Rectified flow, x(t) = (1 - t) x(0) + t eps (sde_lib.RectifiedFlow), trained by flow matching."""
