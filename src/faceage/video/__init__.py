"""Ages in video: decode (:mod:`.io`), detect every N-th frame, track (:mod:`.track`), fuse each
track's per-frame age distributions (:mod:`.fusion`), draw (:mod:`.draw`).

    from faceage import AgeEstimator
    video = AgeEstimator().predict_video("clip.mp4", every=5)
    for frame in video:          # FrameResult: index, time, image, faces (track id, box, fused age)
        ...
    for track in video.tracks:   # Track: id, frames, boxes, per-frame ages, fused age and interval
        print(track.id, track.age, track.age_interval)

Needs the ``video`` extra (PyAV): ``pip install 'faceage[video]'``.
"""
