"""face_recognition's convention for its 128-d embeddings: a Euclidean distance below 0.6 is the same person.

One constant for every default derived from it (clean, protect, evaluate, the identity loss, the verdict),
in a module of its own so that a config can import it without loading dlib.
"""
SAME_PERSON_DISTANCE = 0.6
