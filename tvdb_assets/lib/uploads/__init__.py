from tvdb_assets.lib.uploads.base import UploadInfo, UploadStore
from tvdb_assets.lib.uploads.local import LocalInbox

__all__ = ["LocalInbox", "UploadInfo", "UploadStore"]
