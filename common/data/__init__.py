"""Data shared by two or more packages: MNIST (`mnist`), image transforms (`transforms`) and
step-indexed, resumable `tf.data` pipelines (`pipelines`). Imports run one way:
pipelines -> transforms -> mnist. Package-specific data live in the package (`air.data`,
`flows.data`, `flows.uci`)."""
