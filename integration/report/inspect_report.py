#!/usr/bin/env python3
"""Reads a `cairn backups report --html` page with Python's own HTML parser and prints what
the end-to-end test (integration/e2e/history_report.rs) checks, as JSON:

- rows: one per table row of each deployment's table: {deployment, id, class, cells}
- figures: one per plot <figure>: {id, svgs, series (polylines 2 wide), circles, polygons,
  legend (its items' text)}
- external: every reference that would fetch something: a <script> (any), <link>, <iframe>,
  <object>, <embed>, <img>/<source>/<image>/<use> pointing outside the page, an http(s) or
  protocol-relative src/href, and @import or url(http...) in a style
- doctype: whether the page declares one

Usage: inspect_report.py PAGE.html
"""

import json
import re
import sys
from html.parser import HTMLParser

FETCHING_TAGS = {"script", "link", "iframe", "object", "embed", "frame", "audio", "video"}
URL_ATTRIBUTES = {"src", "href", "xlink:href", "data", "poster", "action", "srcset"}
EXTERNAL_URL = re.compile(r"^\s*(https?:|//|ftp:)", re.IGNORECASE)
EXTERNAL_CSS = re.compile(r"@import|url\(\s*['\"]?\s*(https?:|//)", re.IGNORECASE)


class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows = []
        self.figures = []
        self.external = []
        self.doctype = False
        self.deployment = None
        self.row = None
        self.cell = None
        self.figure = None
        self.legend_item = None
        self.in_style = False

    def handle_decl(self, decl):
        if decl.lower().startswith("doctype html"):
            self.doctype = True

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in FETCHING_TAGS:
            self.external.append(f"<{tag} {attrs}>")
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value and EXTERNAL_URL.match(value):
                self.external.append(f"<{tag} {name}={value}>")
            if name == "style" and value and EXTERNAL_CSS.search(value):
                self.external.append(f"<{tag} style={value}>")
        if tag == "style":
            self.in_style = True
        if tag == "section" and "data-deployment" in attributes:
            self.deployment = attributes["data-deployment"]
        elif tag == "tr" and "data-id" in attributes:
            self.row = {
                "deployment": self.deployment,
                "id": attributes["data-id"],
                "class": attributes.get("class", ""),
                "cells": [],
            }
        elif tag == "td" and self.row is not None:
            self.cell = ""
        elif tag == "figure":
            self.figure = {
                "id": attributes.get("id"),
                "deployment": self.deployment,
                "svgs": 0,
                "series": 0,
                "circles": 0,
                "polygons": 0,
                "legend": [],
            }
        elif self.figure is not None:
            if tag == "svg":
                self.figure["svgs"] += 1
            elif tag == "polyline" and attributes.get("stroke-width") == "2":
                self.figure["series"] += 1
            elif tag == "circle":
                self.figure["circles"] += 1
            elif tag == "polygon":
                self.figure["polygons"] += 1
            elif tag == "li":
                self.legend_item = ""

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "style":
            self.in_style = False
        elif tag == "td" and self.row is not None and self.cell is not None:
            self.row["cells"].append(self.cell.strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        elif tag == "li" and self.legend_item is not None:
            self.figure["legend"].append(self.legend_item.strip())
            self.legend_item = None
        elif tag == "figure" and self.figure is not None:
            self.figures.append(self.figure)
            self.figure = None

    def handle_data(self, data):
        if self.in_style and EXTERNAL_CSS.search(data):
            self.external.append(f"<style> {data[:80]}")
        if self.cell is not None:
            self.cell += data
        if self.legend_item is not None:
            self.legend_item += data


def main():
    with open(sys.argv[1], encoding="utf-8") as page:
        parser = ReportParser()
        parser.feed(page.read())
        parser.close()
    json.dump(
        {
            "doctype": parser.doctype,
            "rows": parser.rows,
            "figures": parser.figures,
            "external": parser.external,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
