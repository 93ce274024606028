"""Keeping inputs for the next model: which to keep (:mod:`.policy`), a bounded spool of them on
the device (:mod:`.store`), and the background upload to the control plane (:mod:`.uploader`),
wired together by :class:`.sampler.Sampler`. See docs/data.md."""
