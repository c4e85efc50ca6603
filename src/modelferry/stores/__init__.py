"""Package stores: where signed model packages live and the links devices download them by.

`LocalPackageStore` keeps them in a folder (`file://` links, one host);
`AzureBlobPackageStore` in a Blob Storage container (SAS links), with the Azure SDK
imported only when it is used.
"""

from modelferry.stores.azure_blob import AzureBlobPackageStore, LinkSettings, UploadRetry
from modelferry.stores.base import DEFAULT_LINK_EXPIRY, PackageStore, StoredPackage
from modelferry.stores.local import DEFAULT_ROOT, LocalPackageStore

__all__ = [
    "DEFAULT_LINK_EXPIRY",
    "DEFAULT_ROOT",
    "AzureBlobPackageStore",
    "LinkSettings",
    "LocalPackageStore",
    "PackageStore",
    "StoredPackage",
    "UploadRetry",
]
