"""vmmigration: declarative placement and migration of libvirt/KVM virtual machines."""
