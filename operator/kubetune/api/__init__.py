"""Typed models of the kubetune resources: the single source of the CRD schemas."""

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
