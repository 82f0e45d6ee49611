"""Items coming in: parse them (`items`), read files (`formats`), stage uploads
(`staging`), download URL sources (`sources`) and write rows in bulk (`bulk`)."""
