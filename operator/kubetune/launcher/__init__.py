"""What runs in the pods the operator creates, from the operator's own package: the trainer pod's launcher
(`kubetune launch`: the plan, torchrun, progress into the status, the post-training steps), the
preprocessing pod (`kubetune preprocess`), the model fetch (`kubetune fetch-model`) and the ModelServe pod's
adapter-sync sidecar. None of it imports kopf or the operator's handlers."""
