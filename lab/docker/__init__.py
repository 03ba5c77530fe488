"""The docker side of the lab: images (built locally when no registry answers), the docker
backend (containers with host networking on the lab's loopback addresses) and compose files."""
